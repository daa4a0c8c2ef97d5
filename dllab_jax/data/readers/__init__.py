"""Readers of published file formats and stores, shared by the sources that read them:
image files (`images`), TensorFlow Datasets (`tfds`), the PASCAL VOC layout (`voc`) and
captioned image files (`caption_files`). The procedural generators live apart, in
`dllab_jax.data.procedural`."""
