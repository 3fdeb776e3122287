"""Deployment side: cluster settings for the pipeline pods, container image names, KFP submit/schedule."""
