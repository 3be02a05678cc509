"""Long-running jobs (fine-tuning, transfer, export): job folders, worker processes, status, cancel and
resume, and the registry of job kinds.
"""
