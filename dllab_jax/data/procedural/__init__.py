"""Generators of the offline data sets: scenes sampled from a seed and rendered with numpy.

- `scene`: the scene model (`Scene`, `Background`, `SceneObject`) and its samplers, shared by
  `shapes`, `scenes` and `captioned_shapes`;
- `raster`: the anti-aliased rasteriser of scenes (images and visible-object maps);
- `masks`: label maps from rendered scenes (classes, trimaps, ignore bands);
- `caption_scenes`, `caption_grammar`, `caption_examples`: the captioned scenes of
  `captioned_shapes`, the grammar that describes them, and their swap pairs;
- `concept_codes`, `concept_images`: the three binary concepts of `concepts` and the
  supersampled renderer of their images.

The sources that serve these (`dllab_jax/data/sources/`) only sample, render and label.
"""
