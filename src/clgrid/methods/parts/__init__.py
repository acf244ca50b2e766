"""Parts that several methods share, imported by the methods that use them (not inherited from ``Method``, and
not imported from another method's module).

- ``flat``: trainable weights as one flat vector (``FlatLayout``) and the quadratic penalty on it
  (``squared_distance``): EWC, online EWC, SI, L2-init, A-GEM, OGD.
- ``buffers``: stored training samples, class-balanced (``BalancedBuffer``) or by reservoir sampling
  (``ReservoirBuffer``): replay, DER, DER++.
- ``distillation``: a frozen copy of the model (the teacher) and the temperature-scaled KL term: LwF, iCaRL,
  kd_ema, masked_kd.
- ``ncm``: nearest-class-mean scores: the NCM head (every method, ``head: ncm``) and iCaRL's classifier.
"""
