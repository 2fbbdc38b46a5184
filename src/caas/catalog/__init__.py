"""Countries, platform models, the options each supports, prices, maintenance plans."""
