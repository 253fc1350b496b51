from adsync.cli import main

raise SystemExit(main())
