"""Speculation strategies for TGI as a pluggy project (`tgi_speculation`): hook specs, manager, built-ins."""
