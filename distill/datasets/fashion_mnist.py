"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 28x28 grayscale clothes in 10 classes, MNIST's
format. Its augmentation suits clothes: mirrored left to right and shifted a little, never
rotated far (a shirt upside down is not a shirt)."""

from distill.augment import Augment
from distill.datasets.idx import IdxDataset

FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"),
    mean=(0.2860,), std=(0.3530,),  # of the 60k training images' pixels in [0, 1]
    augment=Augment(degrees=0.0, translate=0.1, scale=0.0, hflip=True),
    teacher_augment=Augment(degrees=10.0, translate=0.1, scale=0.1, random_magnitude=True,
                            hflip=True),
    heavy_augment=Augment(degrees=15.0, translate=0.1, scale=0.1, hflip=True),
    # Debian recompressed the .gz files, so their md5s differ from upstream's: the uncompressed
    # bytes are what is checked.
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    env="DISTILL_FASHION_MNIST_DIR",
    torchvision="FashionMNIST",
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
    framing="object",  # as its images were made from Zalando's product photos (Xiao et al. 2017)
)
