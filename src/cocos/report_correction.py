"""`python -m cocos.report_correction`, kept working: the module moved to cocos.eval.report_correction (`python -m
cocos.eval.report_correction` is the documented command). A forwarding entry point only: nothing imports it."""

if __name__ == "__main__":
    import sys

    from cocos.eval.report_correction import main

    sys.exit(main())
