"""Deployment: export a model as a Hugging Face Hub folder (with model card and ONNX), publish it
through a git-LFS mirror or the Hub API, and predict on new images (CLI, web demo, JSON API).
Loading an exported folder or `hf://USER/NAME` back is the model store's (digitnet/store/hub.py).

    export.py         export_model: build the Hub-ready folder (config, weights, card, plots, ONNX)
    publish.py        publish(ref, PublishOptions): export, then send by a route (git or api)
    mirror.py         find_remote, push_folder: commit the folder and push it with git LFS
    hub_api.py        the token, create_repo, upload_folder through the Hub HTTP API
    card.py           the model card (README.md with YAML metadata and model-index)
    onnx.py           export_onnx with a parity check against the PyTorch logits
    predict.py        the one path from a new image to a label (CLI and demo)
    fast.py           faster inference: batch norm folded, channels-last, TorchScript
    serve.py          `digitnet serve`: the FastAPI app and its routes (web demo and JSON API)
    serve_content.py  what it answers: model info, the demo page, predictions of uploads
    serve_limits.py   upload size, decode slots and time limits
    server.py         the runner: dependencies, socket, uvicorn
"""
