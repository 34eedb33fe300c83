"""Data: datasets by name, path or hub id (`loading`, `decoding`, `catalogue`), and what
`vaebench prepare` provisions ahead of a run (`provisioning`), pretrained weights included
(`weights`)."""
