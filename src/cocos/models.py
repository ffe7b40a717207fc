"""`python -m cocos.models`, kept working: the module moved to cocos.generation.models (`python -m
cocos.generation.models` is the documented command). A forwarding entry point only: nothing imports it."""

if __name__ == "__main__":
    import sys

    from cocos.generation.models import main

    sys.exit(main())
