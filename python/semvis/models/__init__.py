"""Networks: ResNet trunks (torchvision-compatible names) and the retrieval models built on them."""
from .bean import BEAN, PRESETS as BEAN_PRESETS, BEANImageEncoder, set_batchnorm_eval
from .localization import dense_text_heatmap, heatmap_points, text_heatmap
from .resnet import RESNETS, BasicBlock, Bottleneck, ResNet, load_torchvision_weights, resnet
from .sru import SRU, SRUCell
from .text_encoder import TextEncoder, load_word2vec, pad_captions

__all__ = ["BEAN", "BEAN_PRESETS", "BEANImageEncoder", "RESNETS", "BasicBlock", "Bottleneck", "ResNet", "SRU",
           "SRUCell", "TextEncoder", "dense_text_heatmap", "heatmap_points", "load_torchvision_weights",
           "load_word2vec", "pad_captions", "resnet", "set_batchnorm_eval", "text_heatmap"]
