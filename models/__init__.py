"""edgewise.models"""
