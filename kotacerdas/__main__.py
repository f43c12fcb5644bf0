from kotacerdas.cli import main

raise SystemExit(main())
