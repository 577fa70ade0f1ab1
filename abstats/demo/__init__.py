"""The demo: real scikit-learn models behind abstats, simulated traffic through the REST API."""
