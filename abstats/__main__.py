from abstats.cli import app

app(prog_name="abstats")
