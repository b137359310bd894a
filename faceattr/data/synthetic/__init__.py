"""Synthetic CelebA: generated faces in CelebA's exact file formats, for offline tests and the quickstart.

Files (the original Google Drive / torchvision layout, written by :func:`generate_celeba`)::

    img_align_celeba/000001.jpg ...     178 wide x 218 high RGB JPEGs, names zero-padded to 6 digits
    list_attr_celeba.txt                count line; the 40 names (trailing space, as in the real file); then
                                        "000001.jpg -1  1  1 -1 ..." (values -1/1, right-aligned in 2 columns)
    list_eval_partition.txt             "000001.jpg 0" (0 train, 1 valid, 2 test), no header
    identity_CelebA.txt                 "000001.jpg 2880", no header
    list_bbox_celeba.txt                count line; "image_id x_1 y_1 width height"; rows
    list_landmarks_align_celeba.txt     count line; "lefteye_x lefteye_y ... rightmouth_y"; rows
    .faceattr_synthetic.json            marker {generator, version, num_images, seed, layout}, written LAST

:func:`write_kaggle_layout` converts that folder to Kaggle's ``jessicali9530/celeba-dataset`` layout (CSV files,
images under ``img_align_celeba/img_align_celeba/``, no identity file). Unlike the real data, the bounding boxes
refer to the generated (aligned) image itself, since there is no "in the wild" original.

A folder appears complete or not at all: it is built in a temporary sibling ``.<name>.partial-<hex>`` and renamed
into place under the lock file ``.<name>.lock`` next to it (:mod:`.writer`). :func:`ensure_synthetic`, the cache
that training uses, reuses a folder only when its marker matches and never overwrites one made for other settings.

Modules: :mod:`.attribute_model` (labels with CelebA-like rates and correlations, partitions and identities),
:mod:`.renderer` (drawing each face, with :mod:`.drawing`, :mod:`.face_parts` and :mod:`.hair_and_accessories`),
:mod:`.celeba_files` (the file formats) and :mod:`.writer` (complete-or-absent folders, the cache).

Everything is deterministic per seed, independent of the number of worker processes: each image uses its own
``numpy.random.default_rng([seed, stream, index])``.
"""

from faceattr.data.synthetic.attribute_model import FaceSpec, assign_layout, sample_face
from faceattr.data.synthetic.celeba_files import (
    ATTR_FILE,
    BBOX_COLUMNS,
    BBOX_FILE,
    GENERATOR_VERSION,
    IDENTITY_FILE,
    IMAGE_DIR,
    LANDMARK_COLUMNS,
    LANDMARKS_FILE,
    LAYOUTS,
    MARKER,
    PARTITION_FILE,
    image_name,
    read_marker,
)
from faceattr.data.synthetic.drawing import HEIGHT, WIDTH
from faceattr.data.synthetic.renderer import RenderedFace, render_face
from faceattr.data.synthetic.writer import ensure_synthetic, generate_celeba, generate_synthetic, write_kaggle_layout

__all__ = [
    "ATTR_FILE",
    "BBOX_COLUMNS",
    "BBOX_FILE",
    "GENERATOR_VERSION",
    "HEIGHT",
    "IDENTITY_FILE",
    "IMAGE_DIR",
    "LANDMARKS_FILE",
    "LANDMARK_COLUMNS",
    "LAYOUTS",
    "MARKER",
    "PARTITION_FILE",
    "WIDTH",
    "FaceSpec",
    "RenderedFace",
    "assign_layout",
    "ensure_synthetic",
    "generate_celeba",
    "generate_synthetic",
    "image_name",
    "read_marker",
    "render_face",
    "sample_face",
    "write_kaggle_layout",
]
