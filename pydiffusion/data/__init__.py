"""The data: MNIST-1D generated offline and cached (mnist1d), the image data sets read from their original files
and the one `load_dataset(name, ...)` of every set (datasets), the labels every set shares with the null label of
classifier-free guidance (labels), the validation split and training subsets a run uses (splits), and the
prime-inverse maps P_y of semi-implicit training (patterns)."""
