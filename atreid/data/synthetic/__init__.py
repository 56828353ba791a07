"""Synthetic miniatures of the benchmarks, rendered on the fly with pure numpy.

* :mod:`atreid.data.synthetic.render` - the person renderer shared by every miniature
  (identities, outfits, cameras, RGB and infrared images);
* :mod:`atreid.data.synthetic.atustc` - the AT-USTC miniature
  (:func:`~atreid.data.synthetic.atustc.generate_atustc`).
"""
