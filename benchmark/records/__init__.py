"""Records: the typed record and its parts (`results`, `record_parts`), where a cell's files
live (`cellfiles`) and who holds a cell (`claims`)."""
