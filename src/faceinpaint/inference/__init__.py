"""Built on the Inpainter: files and folders, one slice per rank under torchrun (files, shards), and `make demo`
(demo)."""
