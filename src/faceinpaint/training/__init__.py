"""The trainer: the loop (loop.train), what it is built from (setup), one step (step), each step's seeded batch
(batches), the loss terms (losses), rank 0's logs and samples (report), checkpoints and their export (checkpoint), and
the sample grids and training-progress figure (figures)."""
