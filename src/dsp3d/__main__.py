from dsp3d.cli import main

raise SystemExit(main())
