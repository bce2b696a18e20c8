"""Prediction on clouds of any size (tiled spheres, voting, reprojection)."""
