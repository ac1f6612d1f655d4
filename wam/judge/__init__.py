"""The world model as judge: rank policies inside a learned world model, and say why a real rollout failed.

    head.py       the success head and state model a judge needs beside the world model (`wam judge fit`)
    policies.py   the policies judged, named on the command line, and deliberately weakened ones
    dream.py      imagined episodes: a policy acting inside the world model, chunk by chunk
    rank.py       agreement with real success: Spearman, Pearson, MMRV, pairwise accuracy
    sensitivity.py  `wam judge check-world`: does the world model follow the actions it is given?
    judge.py      `wam judge POLICY... --world CKPT --head DIR`: imagined success per task and policy, report
"""
