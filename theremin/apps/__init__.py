"""Every console script, each a thin entrypoint (``@hydra_app`` or argparse) over the library's functions: ``cli`` (the
one way errors are answered), ``prep``, ``tokenize``, ``train``, ``generate``, ``evaluate``, ``score``, ``demo``,
``demo_data``, ``base_data``, ``serve``.
"""
