"""The class labels every data set here shares: ten classes 0..9, and one index more for "no class"."""
NUM_CLASSES = 10
NULL_LABEL = NUM_CLASSES  # "no class": unconditional samples, and the label dropped for classifier-free guidance
