"""The face pipeline: detection and landmarks (detect), FFHQ alignment and its inverse (align), whole photos with
paste-back (photo), eyes / nose / mouth masks (part_masks), and the reference photo's landmark warp, the prior it
gives Two-Face v2 and the classical `reference-paste` method built on it (reference_warp, reference_prior,
reference_paste). dlib and OpenCV (the `faces` extra) are imported only where a function needs them."""
