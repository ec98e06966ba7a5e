"""theremin-serve: the dice table. An HTTP API (FastAPI) and a web page (theremin/web/) over ``roll.roller.Roller``.

Modules: ``engine`` (cross-request batching on the model), ``store`` (rolls on disk), ``forms`` (request
fields → SamplingSettings, every bound checked first), ``figures`` (style/memorisation per variation),
``service`` (a loaded model serving rolls), ``prompts`` (the built-in prompts), ``app`` (routes). The console
script is ``theremin.apps.serve``.
"""
