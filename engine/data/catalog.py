"""Dataset names, importable without torch (preset validation runs before any training)."""

NAMES: tuple[str, ...] = ("shapes", "imagefolder", "cifar10", "cifar100")
TORCHVISION_PREFIX = "torchvision:"
