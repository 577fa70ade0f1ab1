"""The web console: server-rendered pages for people who hold an API key (an edge layer, like
``abstats.api``). Sign-in turns a key into a signed session cookie; the key's scope applies to
every page and form exactly as on the REST API."""
