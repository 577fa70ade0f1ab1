"""Control: pure policy evaluation -> decisions with evidence -> router backends."""
