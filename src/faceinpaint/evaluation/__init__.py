"""Judging completions: per-image metrics (metrics), the frozen judges (fid: the FID Inception; identity: SFace and
dlib; ST-LPIPS is models/perceptual.py, as training may use it as a loss), a run of methods over mask sets
(evaluate), and the study's tables and figures (study, results)."""
