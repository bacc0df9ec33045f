"""Loss functions of keras-mvs: pure functions returning scalars or dicts."""

from keras_mvs.losses.contrastive import IMAGENET_MEAN
from keras_mvs.losses.contrastive import SCC_CONFIDENCE_THRESHOLD
from keras_mvs.losses.contrastive import SCC_WEIGHT
from keras_mvs.losses.contrastive import apply_reference_mask
from keras_mvs.losses.contrastive import apply_source_masking
from keras_mvs.losses.contrastive import icc_consistency_loss
from keras_mvs.losses.contrastive import pseudo_unity_loss
from keras_mvs.losses.contrastive import reference_rectangle_mask
from keras_mvs.losses.contrastive import scc_consistency_loss
from keras_mvs.losses.depth import STAGE_WEIGHTS
from keras_mvs.losses.depth import UFL_ALPHAS
from keras_mvs.losses.depth import UFL_GAMMAS
from keras_mvs.losses.depth import downsample_to
from keras_mvs.losses.depth import masked_smooth_l1
from keras_mvs.losses.depth import supervised_cascade_loss
from keras_mvs.losses.depth import unified_focal_loss
from keras_mvs.losses.depth import unity_labels
from keras_mvs.losses.photometric import smooth_l05
from keras_mvs.losses.photometric import standardize_images
from keras_mvs.losses.photometric import unsupervised_cascade_loss
from keras_mvs.losses.photometric import unsupervised_stage_loss
