"""Pydantic models of Phalanx's custom resources and the CRD manifests generated from them."""
