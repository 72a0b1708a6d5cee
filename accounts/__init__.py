"""Members, users and roles, margin accounts, collateral assets, balances, movements and API tokens."""
