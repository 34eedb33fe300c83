"""Training a cell: pythae's trainer observed step by step (`training`), the vaebench engine
(`engine`, `device_adam`), pythae's quirks (`pythae_compat`), rolling checkpoints (`resume`) and
the final weights (`checkpoints`)."""
