#include "agent/cli.h"

int main(int argc, char** argv) {
  return stackaudit::run_cli(argc, argv);
}
