"""Deployment: export a model as a Hugging Face Hub folder (with model card and ONNX), publish it
through a git-LFS mirror or the Hub API, load it back by `hf://USER/NAME` or folder path, and
predict on new images.

    hub.py      export_model, load_exported, load_from_hub, publish
    card.py     the model card (README.md with YAML metadata and model-index)
    onnx.py     export_onnx with a parity check against the PyTorch logits
    predict.py  the one path from a new image to a label (CLI and demo)
    serve.py    `digitnet serve`: the web demo (static/index.html) and JSON API over predict.py
"""
