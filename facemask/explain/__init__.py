"""Explanations: CAMs and their faithfulness, occlusion, inside the net, and the figures."""
