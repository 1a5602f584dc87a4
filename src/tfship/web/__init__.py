"""tfship-web: a page in front of the deployed models. Upload or draw an image, see the top classes.

Runs as `python -m tfship.web` (its own Deployment and Service beside the model server); talks to the model server
over gRPC only (model_client), converts images with Pillow (imaging), serves the page with Starlette (app).
"""
