"""Data: MVSNet file formats, scene folders and input pipelines."""

from keras_mvs.data.formats import Camera
from keras_mvs.data.formats import FormatError
from keras_mvs.data.formats import FormatWarning
from keras_mvs.data.formats import read_cam_file
from keras_mvs.data.formats import read_pair_file
from keras_mvs.data.formats import read_pfm
from keras_mvs.data.formats import write_cam_file
from keras_mvs.data.formats import write_pair_file
from keras_mvs.data.formats import write_pfm
from keras_mvs.data.scene import MVSScene
from keras_mvs.data.scene import SceneWarning
from keras_mvs.data.scene import fit_to_max_size
