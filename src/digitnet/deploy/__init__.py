"""Deployment: export a model as a Hugging Face Hub folder (with model card and ONNX), publish it
through a git-LFS mirror or the Hub API, load it back by `hf://USER/NAME` or folder path, and
predict on new images.

    export.py   export_model: build the Hub-ready folder (config, weights, card, plots, ONNX)
    hub.py      load_exported, load_from_hub: load an exported folder or `hf://USER/NAME`
    hub_api.py  the token, create_repo, upload_folder through the Hub HTTP API
    mirror.py   find_remote, push_folder: commit the folder and push it with git LFS
    publish.py  publish(ref, PublishOptions): export, then send by a route (git mirror or api)
    card.py     the model card (README.md with YAML metadata and model-index)
    onnx.py     export_onnx with a parity check against the PyTorch logits
    predict.py  the one path from a new image to a label (CLI and demo)
    serve.py    `digitnet serve`: the web demo (static/index.html) and JSON API over predict.py
"""
