"""DataTransfer: incoming files planned onto node partitions, copied there and verified."""
