"""Explanations of a trained CNN, computed on the layers' own forward and backward passes.

    import gpucnn as gc
    maps = gc.GradCAM(model)(x)                      # (N, H, W) in [0, 1]
    maps = gc.GradCAMPlusPlus(model, layer=4)(x, class_idx=2)
    maps = gc.ScoreCAM(model)(x)
    fine = gc.GuidedGradCAM(model).attribution(x)   # (N, C, H, W)
    gc.cam.faithfulness(model, x, maps).gain          # > 0: the map beats random pixels

Modules: ``base`` (forward with a tap, partial backward, the CAM recipe),
``targets`` (what score is explained), ``gradcam`` (Grad-CAM, Grad-CAM++),
``scorecam``, ``guided`` (guided backpropagation, Guided Grad-CAM),
``metrics`` (pointing game, faithfulness), ``imageops`` (resize and blur).
"""

from .base import BaseCAM, CAMExplanation, Explainer, resolve_layer
from .gradcam import GradCAM, GradCAMPlusPlus
from .guided import GuidedBackprop, GuidedGradCAM, guided_relus
from .metrics import Faithfulness, faithfulness, pointing_game
from .scorecam import ScoreCAM

__all__ = ["BaseCAM", "CAMExplanation", "Explainer", "resolve_layer",
           "GradCAM", "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "guided_relus",
           "Faithfulness", "faithfulness", "pointing_game", "ScoreCAM"]
