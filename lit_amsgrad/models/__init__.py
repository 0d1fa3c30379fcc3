from lit_amsgrad.models.image_classifier import ImageClassifier
from lit_amsgrad.models.synthetic import SyntheticConvexModule

__all__ = ["ImageClassifier", "SyntheticConvexModule"]
