"""The learned coordinator's offline side: recorded-outcome (replay) data, encoders, the TRINITY head,
its training (sep-CMA-ES), routers and baselines, and their evaluation."""
