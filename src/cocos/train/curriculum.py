"""`python -m cocos.train.curriculum`, kept working: the module moved to cocos.rl.curriculum (`python -m
cocos.rl.curriculum` is the documented command). A forwarding entry point only: nothing imports it."""

if __name__ == "__main__":
    import sys

    from cocos.rl.curriculum import main

    sys.exit(main())
