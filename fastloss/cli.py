"""The `fastloss` command."""
import argparse
import sys


def _version():
    from fastloss import __version__
    return __version__


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="fastloss", description="fastloss: fused loss-and-gradient kernels.")
    p.add_argument("--version", action="version", version=f"fastloss {_version()}")
    p.add_argument("command", choices=["bench", "eval", "plot", "info"], help="bench: compare with torch and NumPy; "
                   "eval: a loss over .npy files larger than memory; plot: a loss and its gradient against the "
                   "input; info: build and thread information")
    args, rest = p.parse_known_args(argv[:1])
    if args.command == "bench":
        from fastloss.bench import cli  # bench/ ships as fastloss.bench (python -m bench in a checkout)
        cli.main(argv[1:], prog="fastloss bench")
    elif args.command == "eval":
        from fastloss import eval_cli
        eval_cli.main(argv[1:])
    elif args.command == "plot":
        from fastloss import eval_cli
        eval_cli.plot_main(argv[1:])
    else:
        import fastloss
        from fastloss._kernels import pointwise
        from fastloss._threads import usable_cores
        build = fastloss.build_info()
        chosen = "forced by FASTLOSS_CPU" if build["forced"] else "the best one built that this CPU runs"
        print(f"fastloss {fastloss.__version__}\n"
              f"kernels: {build['level']} ({chosen}; built: {', '.join(build['levels_built'])}; "
              f"this CPU supports x86-64 {build['cpu_supports'] or '(not x86-64)'})\n"
              f"target: {build['target']}; {build['simd']}; "
              f"libmvec {'on' if build['libmvec'] else 'off (scalar exp/log)'}\n"
              f"threads: {fastloss.get_num_threads()} of {usable_cores()} usable cores"
              f"{'' if build['pool'] else ' (built without a worker pool: one thread)'}\n"
              f"pointwise kernels: {', '.join(pointwise.LOSSES)}")

if __name__ == "__main__":
    main()
