"""`python -m cocos.policy`, kept working: the module moved to cocos.generation.policy (`python -m
cocos.generation.policy` is the documented command). A forwarding entry point only: nothing imports it."""

if __name__ == "__main__":
    import sys

    from cocos.generation.policy import main

    sys.exit(main())
