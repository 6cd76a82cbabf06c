"""Data: download and unpack archives, decode images, index, de-duplicate, split, label reviews.

Never imports models, training or evaluation."""
