"""edgewise.agents"""
