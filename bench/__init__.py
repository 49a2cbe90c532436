"""Load benchmark of the gateway against a bare reference pipeline; run it with scripts/bench.sh."""
