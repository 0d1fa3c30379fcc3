from lit_amsgrad.models.image_classifier import ImageClassifier

__all__ = ["ImageClassifier"]
