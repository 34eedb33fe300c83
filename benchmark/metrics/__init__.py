"""Metrics: the registry every reader reads (`registry`), set-level metrics as providers
(`providers`), the two evaluation sets (`evaluation`), the samplers behind gen/ (`samplers`),
FID/KID (`distribution`) and the dataset's own classifier (`classifier`)."""
