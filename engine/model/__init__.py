"""The network: VGG16/VGG19 convolution layers and their forward pass (``vgg``), and where their
weights come from: ImageNet checkpoints, packaged trained weights, a user's file, random
(``weights``), an ONNX graph (``weights_onnx``).
"""
